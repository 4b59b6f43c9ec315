"""Fixtures of the executor tests."""

from __future__ import annotations

import pytest

from app.executors.kubernetes import API_CALLS
from tests.executors.fake_kube_api import FakeKubernetes


@pytest.fixture
def cluster(tmp_path):
    fake = FakeKubernetes(allowed=API_CALLS).start()
    fake.kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
    yield fake
    fake.close()
