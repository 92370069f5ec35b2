"""Datasets other than AVA read into `extract features` inputs (JHMDB-21, UCF101-24)."""
from stagecache.extract.datasets.tube_split import TubeInputs, tube_inputs
from stagecache.extract.datasets.tubes_pkl import TUBE_DATASETS

__all__ = ["TUBE_DATASETS", "TubeInputs", "tube_inputs"]
