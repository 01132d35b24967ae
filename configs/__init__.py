"""The run configs, shipped with the package as ``visionattn.configs``: train.py, eval.py and the
benchmark read them through Hydra's ``pkg://visionattn.configs`` search path."""
