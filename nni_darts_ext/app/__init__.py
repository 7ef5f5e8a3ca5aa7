"""The application on top of the library: the command line (:mod:`.cli` and each command's options), the nnictl
trial entry point (:mod:`.trial`) and the options generated from the settings dataclasses (:mod:`.options`).

The library (``settings``, ``space``, ``oneshot``, ``strategies``, ``search``, ``retrain``, ``groundtruth``, ...)
never imports this package; the import contracts in ``pyproject.toml`` check it.
"""
