"""Shim: tqdm(iterable) that only iterates (see README.md)."""


class tqdm:  # noqa: N801 - the real package's name
    def __init__(self, iterable=None, *args, **kwargs):
        self.iterable = iterable

    def __iter__(self):
        return iter(self.iterable)

    def update(self, *args, **kwargs):
        pass

    def close(self):
        pass
