"""W1: building one iteration's task graph at the paper's largest scale.

DeepSeek-R1 on 1024 GPUs (EP 64, PP 16, 16 micro-batches, the 61 layers split 4/3 over the
stages), reference gating, A100 profile. Target: <= 2 s per build on the 2-core machine.
"""

from fabricsim.workload import WorkloadConfig, build_iteration

DEEPSEEK = WorkloadConfig(model="deepseek-r1", gpus=1024, dp=1, tp=1, pp=16, ep=64,
                          micro_batches=16, layer_split="balanced")


def test_w1_deepseek_1024_gpus(benchmark):
    build_iteration(DEEPSEEK)  # warm the JIT (acyclicity check) and the imports
    graph = benchmark.pedantic(build_iteration, args=(DEEPSEEK,), rounds=5, iterations=1)
    assert graph.topological_order().size == graph.n_tasks
    benchmark.extra_info.update(tasks=graph.n_tasks, dependencies=int(graph.pred.size),
                                critical_path_s=graph.critical_path_ps() * 1e-12)
