"""Training checkpoints: the manager (numbering, retention, background saves),
its lease, directories tf.train wrote, and multi-worker saves."""
