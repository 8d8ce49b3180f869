"""Does training learn? PortraitBooth's ablations at CPU scale, on drawn people no training step has seen.

world.py draws the people, standins.py trains the frozen parts' stand-ins, measurer.py grades pictures,
heldout.py evaluates a run on held-out people, runner.py runs everything; recipe.yaml is the training recipe.
"""
