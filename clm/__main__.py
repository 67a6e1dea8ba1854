"""python -m clm"""

from clm.cli import main

main()
