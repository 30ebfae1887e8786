"""TensorFlow Datasets builders (``import data_prep.tfds.ali_ccp`` registers ``ali_ccp``)."""
