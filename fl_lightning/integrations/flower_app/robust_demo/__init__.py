"""A two-file Flower app: honest clients fit a linear model, a SuperNode with byzantine=true sends noise."""
