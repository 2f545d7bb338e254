"""Networks: the X-ray annotation network (detector); torch + timm, trained here on synthetic data."""
