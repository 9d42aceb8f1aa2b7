"""Data handling: clinical schema and preprocessing, manifest, splits, image preprocessing,
augmentation, synthetic cohort, public-dataset adapters."""
