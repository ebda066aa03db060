"""htsim connection-matrix input and flow triggers, on both engines."""

import numpy as np
import pytest

from fabricsim import fat_tree, simulate_flows
from fabricsim.cli import main
from fabricsim.engine import Triggers
from fabricsim.errors import ConfigError
from fabricsim.htsim import all_to_all_matrix, permutation_matrix, read_connection_matrix
from fabricsim.kernels.packetsim import PacketParams

GBPS100_BYTES_PER_US = 12_500  # 100 Gbit/s


@pytest.fixture(scope="module")
def fab():
    return fat_tree(16, 100, gpus_per_server=4)


def write(tmp_path, text, name="m.cm"):
    path = tmp_path / name
    path.write_text(text)
    return path


CHAIN = """# comment
Nodes 16
Connections 4
Triggers 2
0->8 id 10 start 0 size 2500000 send_done_trigger 0
1->9 id 11 start 0 size 1250000 send_done_trigger 0
2->10 id 12 trigger 0 size 1250000 recv_done_trigger 1
3->11 id 13 trigger 1 size 625000
trigger id 0 barrier 2
trigger id 1 oneshot
"""


def test_parse_chain(tmp_path):
    cm = read_connection_matrix(write(tmp_path, CHAIN))
    assert cm.nodes == 16
    assert cm.flow_id.tolist() == [10, 11, 12, 13]
    assert cm.src.tolist() == [0, 1, 2, 3] and cm.dst.tolist() == [8, 9, 10, 11]
    assert cm.start_ps.tolist() == [0, 0, -1, -1]
    t = cm.triggers
    assert t.kind.tolist() == [2, 0] and t.need.tolist() == [2, 1]
    assert t.targets == ((2,), (3,))
    assert t.send_done.tolist() == [0, 0, -1, -1] and t.recv_done.tolist() == [-1, -1, 1, -1]


def test_start_is_in_microseconds(tmp_path):
    cm = read_connection_matrix(write(tmp_path, "Nodes 4\nConnections 1\n0->1 id 0 start 2.5 size 10\n"))
    assert cm.start_ps.tolist() == [2_500_000]
    assert cm.triggers is None


def test_chain_flow_engine_closed_form(tmp_path, fab):
    """Flow engine: 1 and 2 share nothing (distinct hosts), so each runs at 100 Gbps."""
    cm = read_connection_matrix(write(tmp_path, CHAIN))
    r = simulate_flows(fab, cm.src, cm.dst, cm.size_bytes, cm.start_ps, triggers=cm.triggers)
    assert r.status == "done"
    # flow 0: 2.5 MB = 200 us; flow 1: 100 us; barrier after both -> flow 2 at 200 us, 100 us long;
    # its receiver done at 300 us starts flow 3 (50 us).
    assert r.start_ps.tolist() == [0, 0, 200_000_000, 300_000_000]
    assert r.finish_ps.tolist() == [200_000_000, 100_000_000, 300_000_000, 350_000_000]


@pytest.mark.parametrize("nic", ["fifo", "round-robin"])
def test_chain_packet_engine_order(tmp_path, fab, nic):
    cm = read_connection_matrix(write(tmp_path, CHAIN))
    r = simulate_flows(fab, cm.src, cm.dst, cm.size_bytes, cm.start_ps, engine="packet",
                       triggers=cm.triggers, packet_params=PacketParams(nic_scheduling=nic))
    assert r.status == "done"
    s, f = r.start_ps, r.finish_ps
    # The barrier waits for both senders (last ACK after the receiver finished).
    assert s[2] > max(f[0], f[1])
    # The oneshot fires when flow 2's receiver is done: flow 3 starts exactly then.
    assert s[3] == f[2]


def test_oneshot_multishot_barrier_semantics(fab):
    src = np.array([0, 1, 2, 3, 4, 5])
    dst = np.array([8, 9, 10, 11, 12, 13])
    size = np.array([125_000, 250_000, 125_000, 125_000, 125_000, 125_000])  # 10 us, 20 us, ...
    # trigger 0 multishot fed by flows 0 and 1 (receive side): starts 2 then 3
    # trigger 1 oneshot fed by flows 2 and 3: starts 4 and 5 at the first
    trig = Triggers(kind=np.array([1, 0]), need=np.array([1, 1]), targets=((2, 3), (4, 5)),
                    send_done=np.full(6, -1), recv_done=np.array([0, 0, 1, 1, -1, -1]))
    r = simulate_flows(fab, src, dst, size, [0, 0, -1, -1, -1, -1], triggers=trig)
    us = 1_000_000
    assert r.start_ps.tolist() == [0, 0, 10 * us, 20 * us, 20 * us, 20 * us]


def test_untriggered_flow_is_reported(fab):
    trig = Triggers(kind=np.array([2]), need=np.array([5]), targets=((1,),),
                    send_done=np.array([0, -1]), recv_done=np.array([-1, -1]))
    for engine in ("flow", "packet"):
        r = simulate_flows(fab, [0, 1], [8, 9], [1000, 1000], [0, -1], triggers=trig, engine=engine)
        assert r.status == "deadlock"
        assert r.finish_ps[1] == -1 and r.start_ps[1] == -1


def test_trigger_validation(fab):
    trig = Triggers(kind=np.array([0]), need=np.array([1]), targets=((1,),),
                    send_done=np.array([0, -1]), recv_done=np.array([-1, -1]))
    with pytest.raises(ConfigError) as e:
        simulate_flows(fab, [0, 1], [8, 9], 100, [0, 0], triggers=trig)  # target with a start time
    assert e.value.field == "start_ps"
    with pytest.raises(ConfigError) as e:
        simulate_flows(fab, [0, 1], [8, 9], 100, [0, -1])  # -1 without triggers
    assert e.value.field == "start_ps"
    bad = Triggers(kind=np.array([7]), need=np.array([1]), targets=((1,),),
                   send_done=np.array([0, -1]), recv_done=np.array([-1, -1]))
    with pytest.raises(ConfigError) as e:
        simulate_flows(fab, [0, 1], [8, 9], 100, [0, -1], triggers=bad)
    assert e.value.field == "triggers.kind"


@pytest.mark.parametrize("text, words", [
    ("Connections 1\n0->1 start 0 size 5\n", "Nodes"),
    ("Nodes 4\nConnections 2\n0->1 start 0 size 5\n", "2 connections"),
    ("Nodes 4\nConnections 1\n0->9 start 0 size 5\n", "node 9"),
    ("Nodes 4\nConnections 1\n0->1 start 0 size 5 colour red\n", "unknown connection field"),
    ("Nodes 4\nConnections 1\n0->1 size 5\n", "exactly one of"),
    ("Nodes 4\nConnections 1\n0->1 start 0 trigger 0 size 5\ntrigger id 0 oneshot\n", "exactly one of"),
    ("Nodes 4\nConnections 1\n0->1 trigger 3 size 5\n", "names no trigger"),
    ("Nodes 4\nConnections 1\n0->1 start x size 5\n", "must be a number"),
    ("Nodes 4\nConnections 1\n0->1 start 0 size 5\ntrigger id 0 barrier\n", "barrier"),
    ("Nodes 4\nConnections 1\n0->0 start 0 size 5\n", "distinct"),
    ("Nodes 4\nConnections 1\nhello\n", "unrecognized line"),
])
def test_malformed_files(tmp_path, text, words):
    with pytest.raises(ConfigError) as e:
        read_connection_matrix(write(tmp_path, text))
    assert e.value.field == "traffic.file" and words in str(e.value)


def test_cli_runs_htsim_file_on_both_engines(tmp_path, capsys):
    write(tmp_path, CHAIN)
    (tmp_path / "s.toml").write_text(
        '[fabric]\nhosts = 16\ngpus_per_server = 4\n[traffic]\npattern = "htsim"\nfile = "m.cm"\n')
    assert main(["run", str(tmp_path / "s.toml"), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    assert "completion   350.000 us" in capsys.readouterr().out
    assert main(["run", str(tmp_path / "s.toml"), "--out", str(tmp_path / "p"), "--engine", "packet",
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "retransmissions" in out and "peak" in out


def test_cli_htsim_too_many_nodes(tmp_path, capsys):
    write(tmp_path, "Nodes 64\nConnections 1\n0->1 start 0 size 5\n")
    (tmp_path / "s.toml").write_text(
        '[fabric]\nhosts = 16\ngpus_per_server = 4\n[traffic]\npattern = "htsim"\nfile = "m.cm"\n')
    assert main(["run", str(tmp_path / "s.toml"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fabricsim: error: traffic.file:")


# md5 of the files htsim's generator scripts write (issue 14; Python's random, seed 13)
HTSIM_FILES = [
    ("perm", 128, None, 2_000_000, "64f62ec3ad4cba70dfe911aaca227ed0"),
    ("a2a", 1024, 8, 1_000_000, "07fe6a7f2146c29a6a97487dd3ffc3d7"),
    ("a2a", 1024, 16, 1_000_000, "0bceec7005e4e7e64d12672f639d6104"),
    ("a2a", 128, 8, 1_000_000, "3331fc31a4f17e9649484f37d140fd55"),
]


@pytest.mark.parametrize("kind,nodes,group,size,md5", HTSIM_FILES)
def test_generated_files_are_htsims_byte_for_byte(tmp_path, kind, nodes, group, size, md5):
    import hashlib

    text = permutation_matrix(nodes, size) if kind == "perm" else all_to_all_matrix(nodes, group, size)
    assert hashlib.md5(text.encode()).hexdigest() == md5
    cm = read_connection_matrix(write(tmp_path, text))
    assert cm.nodes == nodes and np.all(cm.size_bytes == size) and np.all(cm.start_ps == 0)
    assert np.all(cm.src != cm.dst)
    assert list(cm.flow_id) == list(range(1, cm.src.size + 1))
    if kind == "perm":  # every node sends once and receives once
        assert sorted(cm.src) == list(range(nodes)) and sorted(cm.dst) == list(range(nodes))
    else:  # groups of `group` hosts, each member to every other member
        assert cm.src.size == nodes * (group - 1)
        member = {}
        for k in range(nodes // group):
            lo = k * group * (group - 1)
            hosts = set(cm.src[lo:lo + group * (group - 1)].tolist())
            assert len(hosts) == group and hosts == set(cm.dst[lo:lo + group * (group - 1)].tolist())
            member.update({h: k for h in hosts})
        assert len(member) == nodes


def test_generated_files_other_seed_and_bad_input():
    assert permutation_matrix(16, 1000, seed=1) != permutation_matrix(16, 1000)
    odd = permutation_matrix(7, 1000).splitlines()  # any node count, not only even ones
    assert odd[:2] == ["Nodes 7", "Connections 7"] and len(odd) == 9
    with pytest.raises(ConfigError, match="group"):
        all_to_all_matrix(10, 4)
    with pytest.raises(ConfigError, match="size_bytes"):
        permutation_matrix(8, 0)
    with pytest.raises(ConfigError, match="nodes"):
        all_to_all_matrix(1, 1)
