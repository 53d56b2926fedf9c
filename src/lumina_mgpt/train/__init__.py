"""Training: the config, FSDP2 trainer loop, losses, LR schedule, checkpoints and export."""
