"""Bad hyperparameters shared by the validation tests of the losses and the miners.

Each case is (value, exception): the error the constructor must raise, naming the argument.
A Python value of the wrong type (a float or a bool where an integer is meant, a string) is a
TypeError; a number outside the allowed range is a ValueError.
"""

import math
import re

INF, NAN = math.inf, math.nan

# (lower_cutoff, upper_cutoff): the rule everywhere is 0 < lower_cutoff <= upper_cutoff, lower
# finite, upper inf for no cutoff (the rule of the info_nce operator).
BAD_CUTOFFS = [
    (1.0, 0.5, ValueError, "upper_cutoff"),
    (0.6, 0.59, ValueError, "upper_cutoff"),
    (0.0, 1.0, ValueError, "lower_cutoff"),
    (-0.5, 1.0, ValueError, "lower_cutoff"),
    (NAN, 1.0, ValueError, "lower_cutoff"),
    (INF, INF, ValueError, "lower_cutoff"),
    (0.5, NAN, ValueError, "upper_cutoff"),
    (0.5, -1.0, ValueError, "upper_cutoff"),
    (True, 1.4, TypeError, "lower_cutoff"),
    (0.5, "1.4", TypeError, "upper_cutoff"),
]
GOOD_CUTOFFS = [(0.5, 0.5), (0.5, INF), (1e-3, 2.0), (1, 2)]

# An integer argument >= 1 (a count or a size).
BAD_COUNTS = [(2.5, TypeError), (3.0, TypeError), (True, TypeError), ("3", TypeError), (0, ValueError),
              (-2, ValueError)]

# A finite real > 0 (temperature).
BAD_POSITIVE_REALS = [(0.0, ValueError), (-0.1, ValueError), (NAN, ValueError), (INF, ValueError),
                      (True, TypeError), ("0.1", TypeError)]

# A finite real >= 0 (margin, beta_init, nu, rho).
BAD_NONNEGATIVE_REALS = [(-0.1, ValueError), (NAN, ValueError), (INF, ValueError), (True, TypeError),
                         ("1", TypeError)]


def names(argument: str) -> str:
    """A regex matching ``argument`` as a whole name in a message ("q" does not match "query")."""
    return rf"(?<!\w){re.escape(argument)}(?!\w)"
