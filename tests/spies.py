"""Spies on an exported optimizer's compiled path, shared by the tests."""


def kernel_calls(opt) -> list[int]:
    """The sizes (theta's element count) of the compiled kernel's calls ``opt`` makes from now
    on: ordinary calls and the steady step's bound calls alike."""
    sizes: list[int] = []
    runner = opt._compiled_runner()
    call, bound = runner._call, runner._run_bound

    def run_bound(layout, coefficients):
        done = bound(layout, coefficients)
        if done:
            sizes.append(layout.theta.numel())
        return done

    runner._call = lambda *a: sizes.append(a[0].numel()) or call(*a)
    runner._run_bound = run_bound
    return sizes
