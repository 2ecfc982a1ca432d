"""Evaluation: task metrics (`metrics`), pure scorers (`scoring`) and the task table (`tasks`), reports drawn
from their results (`report`, `plots`, `vlmr eval`), a zero-shot BLIP baseline (`baseline`, `vlmr baseline`)
and a latency benchmark of a served model (`bench`, `vlmr bench`)."""
