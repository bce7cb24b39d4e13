"""What runs inside every training process: tokenizer, data, model, Trainer, checks against the plan."""
