"""Datasets and splits.

Modules:
  celeba     read CelebA's attribute and partition files (official .txt or the common .csv variant)
  utkface    read UTKFace's labels from its file names (age_gender_race_datetime.jpg)
  splits     bias degree, group quotas, the biased train split and the train/val/test manifests
  tinyfaces  the built-in procedurally rendered world, written in CelebA's format
  cache      decode-once image cache
  loading    image batches for training and evaluation
"""
