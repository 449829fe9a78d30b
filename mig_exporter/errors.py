"""The one exception type that reaches the user as a one-line error and exit status 2."""


class InputError(Exception):
    """Bad input (a fleet file, a flag, a layout, a web config) or an unusable environment.

    The message is one line that names the input and the reason, e.g.
    ``fleet.yaml: gpus[2].instances[1].placement: 3 is not a valid start for 3g.40gb (valid: 0, 4)``.
    Raise it before anything is changed; ``cli.main`` prints it and exits 2.
    """
