"""The ``ali_ccp`` TFDS dataset; importing this package registers it with TFDS.

The import is relative so that ``tfds build data_prep/tfds/ali_ccp`` (which
imports this directory as the top-level package ``ali_ccp``) and ``import
data_prep.tfds.ali_ccp`` each load the builder module once.
"""

from .ali_ccp_dataset_builder import Builder

__all__ = ["Builder"]
