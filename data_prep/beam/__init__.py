"""The conversion as an Apache Beam pipeline (entry point: data_prep/beam_convert.py)."""
