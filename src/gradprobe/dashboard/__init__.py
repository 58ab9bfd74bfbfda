"""A saved W&B workspace for gradient flow, as code:
``python -m gradprobe.dashboard ENTITY/PROJECT``.

Built from what runs logged (``logged`` reads offline runs or a project's runs; ``keys`` sorts
their keys into per-layer statistics and series; ``workspace`` lays out the sections), so it fits
any depth; ``cli`` is the command line, and only its save step needs a W&B server.
"""
