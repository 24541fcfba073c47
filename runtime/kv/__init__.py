"""KV caches, one per mode of the bundle's KV contract (bundle.kv), behind one interface (kv.base.KVCache):

    concat.ConcatCache   "concat": past in, past + new rows out; two host buffers per layer used in turn
    shared.SharedCache   "shared": one buffer per layer bound as past and present, on the host or the device
    static.StaticCache   "static": fixed buffers, explicit masks, the new rows copied into their slots
    pool.SlotPool        "shared" caches side by side ([S, kv, rows, hd] per layer), each slot a SlotCache of its
                         own, so adjacent slots decode in one batched graph call (engine.decode_batch)

Where buffers live (host numpy or device OrtValues) is a `Placement` (kv/storage.py).
"""

from gptoss.bundle.kv import KVContract

from .base import KVCache
from .concat import ConcatCache
from .pool import SlotCache, SlotPool
from .shared import SharedCache
from .static import StaticCache
from .storage import HOST, Placement

__all__ = ["ConcatCache", "HOST", "KVCache", "Placement", "SharedCache", "SlotCache", "SlotPool", "StaticCache",
           "new_cache"]


def new_cache(spec: KVContract, capacity: int = 256, placement: Placement = HOST) -> KVCache:
    """An empty cache of the mode `spec` names; `capacity`: positions preallocated where the mode grows."""
    if spec.mode == "shared":
        return SharedCache(spec, capacity, placement=placement)
    if placement.on_device:
        raise ValueError(f"a {spec.mode!r} cache lives on the host; only a shared cache can live on a device")
    if spec.mode == "static":
        return StaticCache(spec)
    return ConcatCache(spec, capacity)
