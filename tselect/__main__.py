from tselect.cli import main

main()
