"""The one error the statistics core raises.

It subclasses ValueError because every failure here is a bad input value (a count larger than its
denominator, a negative duration, a confidence level outside (0, 1)); callers that map domain errors to
HTTP can catch StatisticsError alone without also swallowing unrelated ValueErrors from elsewhere.
"""


class StatisticsError(ValueError):
    """An input to a statistics function is outside its domain."""
