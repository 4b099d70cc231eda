"""What tf.keras 2.x wrote: checkpoints paired by structure, SavedModels with
keras_metadata.pb rebuilt as Keras 3 models."""
