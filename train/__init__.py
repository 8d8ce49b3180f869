"""PortraitBooth training: data format, losses, attention capture, the training script, evaluation."""
