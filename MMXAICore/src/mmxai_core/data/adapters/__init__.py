"""Adapters that turn public datasets (CBIS-DDSM, Duke Breast Cancer MRI, a generic CSV + image
folder) into an MMXAI manifest CSV and clinical schema."""
