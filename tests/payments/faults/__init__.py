"""Issue #7: the payments core under the faults a real gateway and a real Pi produce."""
