"""Several workers share the load of one client's keep-alive connections."""

from __future__ import annotations

import http.client
import json
import re
import time
from pathlib import Path
from urllib.parse import urlsplit

from serving.client import local_service
from tests.serving.conftest import TOKEN, Deployment


def test_a_burst_of_keep_alive_connections_is_spread_over_the_workers(
    deployment: Deployment, tmp_path: Path
) -> None:
    env = {**deployment.env, "CLM_SERVING__WORKERS": "2"}
    log = tmp_path / "serve.log"
    with local_service(token=TOKEN, env=env, log=log) as service:
        address = urlsplit(service.url)
        deadline = time.monotonic() + 120
        while len(re.findall(r"worker \d+ ready", log.read_text())) < 2:  # both loaded
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)
        # A client's pool under load: connections opened at once, each sending a request
        # straight away (they wait in the shared socket's queue together), then kept alive.
        pool = [http.client.HTTPConnection(address.hostname, address.port, timeout=60)
                for _ in range(8)]  # fmt: skip
        body = json.dumps({"customers": [{"customer_id": f"C{i:06d}"} for i in range(1, 300)]})
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        statuses = []
        for _ in range(3):
            for connection in pool:
                connection.request("POST", "/score", body, headers)
            for connection in pool:
                answer = connection.getresponse()
                answer.read()
                statuses.append(answer.status)
        for connection in pool:
            connection.close()
    assert statuses == [200] * 24
    workers = re.findall(r"POST /score 200 in [\d.]+ ms \(worker (\d+)\)", log.read_text())
    assert len(workers) == 24
    per_worker = {w: workers.count(w) for w in set(workers)}
    assert len(per_worker) == 2 and min(per_worker.values()) >= 6, per_worker
