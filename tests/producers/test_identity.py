"""Run id, node and rank from the launcher's environment (producers.identity)."""

from __future__ import annotations

from producers.identity import resolve


def ident(env: dict[str, str], **kw: object):  # type: ignore[no-untyped-def]
    args: dict[str, object] = {"host": "gpu-1", "pid": 100, "ppid": 10}
    args.update(kw)
    return resolve(env, **args)  # type: ignore[arg-type]


def test_explicit_run_id_wins() -> None:
    """An explicit run_id beats RUNSTREAM_RUN_ID and torchrun's id."""
    assert ident({"TORCHELASTIC_RUN_ID": "job"}, run_id="mine", settings_run_id="env").run_id == "mine"


def test_runstream_run_id_beats_torchrun() -> None:
    """RUNSTREAM_RUN_ID (settings.run_id) is used over TORCHELASTIC_RUN_ID."""
    assert ident({"TORCHELASTIC_RUN_ID": "job"}, settings_run_id="shared").run_id == "shared"


def test_torchrun_ranks_share_a_stable_id() -> None:
    """Every rank of one torchrun job, on any node, derives the same id; another job differs."""
    a = ident({"TORCHELASTIC_RUN_ID": "job-1", "RANK": "0"}, host="n1", ppid=5)
    b = ident({"TORCHELASTIC_RUN_ID": "job-1", "RANK": "7"}, host="n2", ppid=9)
    c = ident({"TORCHELASTIC_RUN_ID": "job-2"})
    assert a.run_id == b.run_id != c.run_id
    assert len(a.run_id) == 16 and all(ch in "0123456789abcdef" for ch in a.run_id)


def test_default_rdzv_id_on_one_node_groups_by_agent() -> None:
    """With --rdzv-id left at 'none', ranks of one node share the id of their torchrun agent."""
    env = {"TORCHELASTIC_RUN_ID": "none", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "4"}
    a, b = ident({**env, "RANK": "0"}), ident({**env, "RANK": "3"})
    other_job = ident({**env, "RANK": "0"}, ppid=11)
    assert a.run_id == b.run_id != other_job.run_id
    assert a.warning == ""


def test_default_rdzv_id_on_many_nodes_warns_and_stays_unique() -> None:
    """Across nodes without a job id, each rank gets its own id and a warning says what to set."""
    env = {"TORCHELASTIC_RUN_ID": "none", "WORLD_SIZE": "16", "LOCAL_WORLD_SIZE": "8"}
    a, b = ident(env), ident(env)
    assert a.run_id != b.run_id
    assert "RUNSTREAM_RUN_ID" in a.warning


def test_plain_process_gets_random_id() -> None:
    """Without any launcher, each process gets a new 16-hex-digit id."""
    a, b = ident({}), ident({})
    assert a.run_id != b.run_id and len(a.run_id) == 16


def test_rank_and_world_from_environment() -> None:
    """RANK, LOCAL_RANK and WORLD_SIZE are read; defaults are 0, 0, 1."""
    i = ident({"RANK": "5", "LOCAL_RANK": "1", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4"})
    assert (i.rank, i.local_rank, i.world_size) == (5, 1, 8)
    d = ident({"RANK": "garbage"})
    assert (d.rank, d.local_rank, d.world_size) == (0, 0, 1)


def test_node_is_hostname_with_node_rank_across_nodes() -> None:
    """The node is the hostname; with several nodes it carries the node rank too."""
    assert ident({"GROUP_RANK": "0", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}).node == "gpu-1"
    multi = {"WORLD_SIZE": "16", "LOCAL_WORLD_SIZE": "8"}
    assert ident({**multi, "NODE_RANK": "1"}).node == "gpu-1/1"
    assert ident({**multi, "GROUP_RANK": "1"}).node == "gpu-1/1"


def test_producer_id_unique_per_process() -> None:
    """Each resolved identity has its own producer id."""
    assert ident({}).producer != ident({}).producer
