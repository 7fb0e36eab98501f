"""mtlstudy: when to use pairwise MTL, STILTs or MTL-All (Weller, Seppi & Gardner, ACL 2022)."""
__version__ = "0.1.0"
