"""How kerasave runs: TensorFlow and Keras imported lazily and quietly, the
versions it supports, its version, public names' module, the tutorial's reference model."""
