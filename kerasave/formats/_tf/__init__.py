"""TensorFlow's file formats read without TensorFlow: the protobuf wire format,
the tensor-bundle index, the checkpoint object graph, SavedModel programs."""
