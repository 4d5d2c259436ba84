from sandbox.serve import main

main()
