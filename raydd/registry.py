"""One name -> factory table type for every pluggable part (dataset sources, models, segmenters, text
encoders, distillation methods), so adding a part is one decorated function and every table behaves the
same way."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from raydd.errors import ConfigError

F = TypeVar("F", bound=Callable)


class Registry(Generic[F]):
    """Names map to factories; registering a different factory under a taken name is an error."""

    def __init__(self, kind: str, *, lowercase: bool = False) -> None:
        self.kind = kind  # "dataset source", "model", ...: used in messages
        self._lowercase = lowercase
        self._entries: dict[str, F] = {}

    def _key(self, name: str) -> str:
        return str(name).lower() if self._lowercase else str(name)

    def register(self, name: str) -> Callable[[F], F]:
        """Decorator: make ``name`` resolve to the decorated factory."""

        def decorate(factory: F) -> F:
            key = self._key(name)
            existing = self._entries.get(key)
            if existing is not None and existing is not factory:
                raise ValueError(f"{self.kind} {name!r} is already registered by {existing.__module__}")
            self._entries[key] = factory
            return factory

        return decorate

    def get(self, name: str) -> F | None:
        return self._entries.get(self._key(name))

    def resolve(self, spec: str, spelling: str = "") -> tuple[F, str | None]:
        """The factory a ``"<name>[:<argument>]"`` spec names, and its argument (None when absent).

        An unknown name is a ConfigError listing the known ones; ``spelling`` says how an argument is written.
        """
        name, _, argument = str(spec).partition(":")
        factory = self.get(name)
        if factory is None:
            hint = f" ({spelling})" if spelling else ""
            raise ConfigError(f"unknown {self.kind} {spec!r}; known: {', '.join(self.names())}{hint}")
        return factory, argument or None

    def names(self) -> list[str]:
        """Registered names, sorted, for help texts and error messages."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._key(name) in self._entries
