"""Results of `lift serve` by (video content hash, prompt, critic digest): a video rated once is never rated again
by the same critic with the same settings, whichever URL or request it came in.

Kept in memory (least recently used dropped past `entries`) and, with a `url`, as one JSON object per result in
object storage, so a restarted or second replica finds what an earlier one rated. A stored entry that cannot be
read (a partial write of a crashed process) is taken as a miss.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import threading

from lift.io import storage

log = logging.getLogger(__name__)


def key(video_hash: str, prompt: str, critic_digest: str) -> str:
    """The cache key of one rating: a hash of the video's content hash, the prompt and the critic digest."""
    return hashlib.sha256(json.dumps([video_hash, prompt, critic_digest]).encode()).hexdigest()


class Cache:
    def __init__(self, entries: int, url: str | None = None):
        self.entries, self.url = entries, url
        self.memory: collections.OrderedDict[str, dict] = collections.OrderedDict()
        self.lock = threading.Lock()

    def _object(self, k: str) -> str:
        return storage.join(self.url, k[:2], f"{k}.json")

    def get(self, k: str) -> dict | None:
        """The stored result, or None; blocking (object storage): call from a worker thread."""
        with self.lock:
            if k in self.memory:
                self.memory.move_to_end(k)
                return self.memory[k]
        if not self.url:
            return None
        try:
            found = storage.read_json(self._object(k)) if storage.exists(self._object(k)) else None
        except ValueError as e:
            log.warning("cache entry unreadable, rating again: %s", e)
            return None
        if found is not None:
            self._remember(k, found)
        return found

    def put(self, k: str, value: dict) -> None:
        self._remember(k, value)
        if self.url:
            storage.write_json(self._object(k), value)

    def _remember(self, k: str, value: dict) -> None:
        with self.lock:
            self.memory[k] = value
            self.memory.move_to_end(k)
            while len(self.memory) > self.entries:
                self.memory.popitem(last=False)
