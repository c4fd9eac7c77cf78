"""The ground every other module stands on: errors, atomic file writes, the four groups, where each stage
reads and writes (paths), and the device and number format a computation runs on. Imports nothing above it.
"""
