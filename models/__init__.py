"""rnnscope's science layer: char-level recurrent language models and the tools that look inside them.

Pure PyTorch + numpy; never imports the web layer, so it works from a notebook.
"""

__version__ = "0.1.0"
