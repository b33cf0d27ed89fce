"""Training: a tiny chat model from scratch, and LoRA fine-tuning of a GGUF model, in numpy."""
