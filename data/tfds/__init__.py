"""MOVi's TFDS on-disk format, read without TensorFlow: TFRecord framing and tf.train.Example (tfrecord.py), MOVi
examples to our video dicts (movi.py). Only the converter (data/convert_tfds_to_arrayrecord.py) uses it."""
