from lit_untrac.cli import main

main()
