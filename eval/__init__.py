"""Evaluation: task metrics (`metrics`), reports (`report`, `vlmr eval`), a zero-shot BLIP baseline
(`baseline`, `vlmr baseline`) and a latency benchmark of a served model (`bench`, `vlmr bench`)."""
