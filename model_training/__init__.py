"""Model training and export: the Keras fraud MLP and the bootstrap model for a fresh stack."""
