"""`python -m metallb_bgp.bfd`: the BFD process a speaker starts beside ExaBGP."""

from metallb_bgp.bfd.daemon import main

main()
