"""Hugging Face pipelines chaining a tokenizer and a prior (issue 5)."""
