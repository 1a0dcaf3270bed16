"""Downloading with retries, a progress bar, an overall deadline, checksum verification and an atomic move into place."""
import gzip
import os
import sys
import time
import urllib.error
import urllib.request
import zlib

from ..atomic import atomic_write
from .idx import DatasetError, sha256

TIMEOUT = 30          # seconds one connect or read may wait
DEADLINE = 600        # seconds one whole download may take


def _progress(total, desc):
    try:
        from tqdm import tqdm
        return tqdm(total=total, unit="B", unit_scale=True, desc=desc, leave=False, file=sys.stderr)
    except ImportError:
        return None


def fetch(url, dest, expected_sha256, timeout=TIMEOUT, deadline=DEADLINE):
    """Download url to dest (atomically), verifying the sha256 of the decompressed content.

    ``timeout`` bounds each connect and read; ``deadline`` bounds the whole download, so a server
    that trickles a byte at a time cannot keep it going forever. A partial file goes beside dest as
    ``.part-*``; a later download into that directory removes the ones whose downloader is gone.
    """
    def verify(tmp):
        with open(tmp, "rb") as f:
            data = f.read()
        try:
            content = gzip.decompress(data) if dest.endswith(".gz") else data
        except (OSError, EOFError, zlib.error) as e:
            raise DatasetError(f"{url}: the download cannot be decompressed ({type(e).__name__}: {e}); it is "
                               "corrupt or truncated and was discarded") from None
        got = sha256(content)
        if got != expected_sha256:
            raise DatasetError(f"{url}: sha256 of the decompressed content is {got}, expected {expected_sha256}; "
                               "the download was discarded")

    start = time.monotonic()
    with atomic_write(dest, prefix=".part-", check=verify) as out, \
            urllib.request.urlopen(url, timeout=timeout) as response:
        total = response.headers.get("Content-Length")
        total = int(total) if total else None
        bar = _progress(total, os.path.basename(dest))
        received = 0
        try:
            while True:
                if time.monotonic() - start > deadline:
                    raise DatasetError(f"{url}: the download passed its deadline of {deadline:g} s with "
                                       f"{received} bytes received; the server is too slow (raise the deadline on "
                                       "a slow link: FashionMNIST(deadline=...), lenet.py --download-deadline)")
                chunk = response.read1(1 << 16)          # what has arrived, so the deadline is checked often
                if not chunk:
                    break
                out.write(chunk)
                received += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
        if total is not None and received != total:
            raise DatasetError(f"{url}: connection closed after {received} of {total} bytes")


def fetch_from_mirrors(name, mirrors, dest, expected_sha256, attempts=2, timeout=TIMEOUT, deadline=DEADLINE,
                       backoff=1.0):
    """Try each mirror in turn, each up to ``attempts`` times; raise with every failure listed."""
    failures = []
    for base in mirrors:
        url = base.rstrip("/") + "/" + name
        for attempt in range(1, attempts + 1):
            try:
                fetch(url, dest, expected_sha256, timeout, deadline)
                return
            except (OSError, urllib.error.URLError, DatasetError, ValueError) as e:
                failures.append(f"{url} (attempt {attempt}): {type(e).__name__}: {e}")
                if attempt < attempts:
                    time.sleep(backoff * attempt)
    raise DatasetError("could not download " + name + ":\n  " + "\n  ".join(failures))
