"""Prepares an offline dataset (digits, mnist5k) as a tfds array_record dataset.

    python -m lazy_jax.data.prepare --dataset=mnist5k --data_dir=DIR

Without --data_dir: $TFDS_DATA_DIR, else ~/tensorflow_datasets. Idempotent: an
already prepared dataset is left alone. The loader also prepares these
datasets on first use, so this is only needed to prepare ahead (e.g. once on
a shared file system before a multi-host run).
"""

from __future__ import annotations

import time

from absl import app
from absl import flags

from lazy_jax.data import offline
from lazy_jax.data import sources

_DATASET = flags.DEFINE_enum('dataset', None, sorted(offline.OFFLINE_DATASETS),
                             'Offline dataset to prepare.', required=True)
_DATA_DIR = flags.DEFINE_string(
    'data_dir', None, 'tfds data dir (default $TFDS_DATA_DIR, else ~/tensorflow_datasets).')


def main(argv):
  del argv
  data_dir = sources.resolve_data_dir(_DATA_DIR.value)
  name = _DATASET.value
  start = time.perf_counter()
  if offline.prepare(name, data_dir):
    print(f'Prepared {name!r} in {offline.version_dir(name, data_dir)} '
          f'({time.perf_counter() - start:.1f} s).')
  else:
    print(f'{name!r} is already prepared in {offline.version_dir(name, data_dir)}; '
          f'nothing to do.')


if __name__ == '__main__':
  app.run(main)
