"""Architecture description: specs, their computational graphs, output layouts and the real
target models (timm, Hugging Face transformers) the predicted weights load into."""
