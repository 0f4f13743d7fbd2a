"""Type stub for the compiled libm pow kernel."""
import numpy as np

def pow_array(base: np.ndarray, exponent: float, out: np.ndarray) -> None: ...
