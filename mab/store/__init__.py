"""Feature stores behind one interface, chosen once at start-up by name."""

from __future__ import annotations

from collections.abc import Callable

from mab.config import Config
from mab.store.base import Features, FeatureStore, StoreHealth

__all__ = ["FeatureStore", "Features", "StoreHealth", "build_store"]


def _embedded(config: Config) -> FeatureStore:
    from mab.store.embedded import EmbeddedStore

    return EmbeddedStore(config)


def _vertex_featurestore(config: Config) -> FeatureStore:
    from mab.store.vertex import VertexFeaturestoreStore

    store: FeatureStore = VertexFeaturestoreStore(config.vertex)
    return store


def _vertex_online(config: Config) -> FeatureStore:
    from mab.store.vertex import VertexOnlineStore

    store: FeatureStore = VertexOnlineStore(config.vertex)
    return store


def _redis(config: Config) -> FeatureStore:
    from mab.store.redis import RedisStore

    store: FeatureStore = RedisStore(config)
    return store


_FACTORIES: dict[str, Callable[[Config], FeatureStore]] = {
    "embedded": _embedded,
    "vertex-featurestore": _vertex_featurestore,
    "vertex-online": _vertex_online,
    "redis": _redis,
}


def build_store(config: Config) -> FeatureStore:
    """Build the configured store in the parent, before workers fork.

    The embedded store loads its catalog here so workers share it copy-on-write;
    network stores only remember their config and connect in `start()`.
    """
    return _FACTORIES[config.store](config)
