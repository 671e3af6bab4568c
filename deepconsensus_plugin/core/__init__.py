"""Pure Deep Consensus core: numpy/scipy/TensorFlow code that knows nothing of Scipion.

Every module here works on plain arrays and file paths so that it can be tested
fast and reused outside Scipion; the Scipion layer (``protocols``, ``viewers``)
only maps Scipion objects to these functions and back.
"""
