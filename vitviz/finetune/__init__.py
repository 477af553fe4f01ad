"""Fine-tuning: data sets, safe zips, the trainer, run folders, the worker and torchrun scale-out."""
