"""Stage two: autoregressive priors over the codes of a stage-one tokenizer (issue 4)."""
