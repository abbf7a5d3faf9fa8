"""The training job: the ancestry model, stage 1, stage 2, TAL+ and baselines."""
