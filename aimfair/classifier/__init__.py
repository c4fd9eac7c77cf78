"""The classifier: ResNet-18 (models), its training with model selection and masked SGD (train), and the
convolutions of small feature maps as matrix products on a CPU (small_maps).
"""
